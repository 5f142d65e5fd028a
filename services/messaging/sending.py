"""Whether anyone can send in a conversation now, and when not, why.

A conversation with a client follows the practice's "secure messaging with clients"
switch first, then the client's own switch: the practice's switch wins, so nobody is
offered "Enable Secure Messaging" for a client when enabling would change nothing. A
conversation among staff follows the practice's team messaging switch. The reason's
words are the sentence a refused send answers with.
"""

from __future__ import annotations

import enum


class CannotSend(enum.Enum):
    PRACTICE_DISABLED = "Secure messaging with clients is turned off for this practice."
    CLIENT_DISABLED = "Secure messaging is turned off for this client."
    TEAM_DISABLED = "Team messaging is turned off for this practice."

    @property
    def message(self) -> str:
        return self.value


def cannot_send(
    *, client_id: str | None, client_enabled: bool, secure_messaging_enabled: bool, team_messaging_enabled: bool
) -> CannotSend | None:
    """Why nobody can send to these people now; None when a send would be accepted.

    ``client_id`` is the client among them (None between staff), ``client_enabled`` the
    client's own switch, and the other two the practice's settings.
    """
    if not client_id:
        return None if team_messaging_enabled else CannotSend.TEAM_DISABLED
    if not secure_messaging_enabled:
        return CannotSend.PRACTICE_DISABLED
    if not client_enabled:
        return CannotSend.CLIENT_DISABLED
    return None
