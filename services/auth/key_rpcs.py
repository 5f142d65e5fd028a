"""The gRPC face of signing keys and service accounts.

Mixed into AuthServicer; app.py attaches the handlers with ``use_keys``.
"""

from __future__ import annotations

import grpc
from confidant.auth.v1 import auth_service_pb2 as pb

from services.auth.keys import SigningKeyHandlers, SigningKeyInfo
from services.auth.service_accounts import ServiceAccount, ServiceAccountHandlers
from services.common.convert import timestamp
from services.common.errors import Unavailable


def _key(info: SigningKeyInfo) -> pb.SigningKey:
    key = pb.SigningKey(
        kid=info.kid, public_key_pem=info.public_key_pem, activated_at=timestamp(info.activated_at)
    )
    if info.not_after is not None:
        key.not_after.CopyFrom(timestamp(info.not_after))
    return key


def _account(account: ServiceAccount) -> pb.ServiceAccount:
    return pb.ServiceAccount(
        service_account_id=account.service_account_id,
        practice_id=account.practice_id,
        display_name=account.display_name,
        client_id=account.client_id,
        scopes=list(account.scopes),
        created_at=timestamp(account.created_at),
    )


class KeyRpcs:
    _signing_keys: SigningKeyHandlers | None = None
    _service_accounts: ServiceAccountHandlers | None = None

    def use_keys(self, signing_keys: SigningKeyHandlers, service_accounts: ServiceAccountHandlers) -> None:
        self._signing_keys = signing_keys
        self._service_accounts = service_accounts

    def _keys(self) -> SigningKeyHandlers:
        if self._signing_keys is None:
            raise Unavailable("Signing keys are not available.")
        return self._signing_keys

    def _accounts(self) -> ServiceAccountHandlers:
        if self._service_accounts is None:
            raise Unavailable("Service accounts are not available.")
        return self._service_accounts

    async def RotateSigningKey(
        self, request: pb.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateSigningKeyResponse:
        return pb.RotateSigningKeyResponse(key=_key(await self._keys().rotate()))

    async def ListSigningKeys(
        self, request: pb.ListSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSigningKeysResponse:
        return pb.ListSigningKeysResponse(keys=[_key(k) for k in await self._keys().list_published()])

    async def CreateServiceAccount(
        self, request: pb.CreateServiceAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateServiceAccountResponse:
        account, secret = await self._accounts().create(request.display_name, list(request.scopes))
        return pb.CreateServiceAccountResponse(account=_account(account), client_secret=secret)

    async def ListServiceAccounts(
        self, request: pb.ListServiceAccountsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListServiceAccountsResponse:
        return pb.ListServiceAccountsResponse(accounts=[_account(a) for a in await self._accounts().list()])

    async def DeleteServiceAccount(
        self, request: pb.DeleteServiceAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteServiceAccountResponse:
        await self._accounts().delete(request.service_account_id)
        return pb.DeleteServiceAccountResponse()

    async def IssueServiceAccountToken(
        self, request: pb.IssueServiceAccountTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssueServiceAccountTokenResponse:
        issued = await self._accounts().issue_token(
            request.client_id, request.client_secret, list(request.scopes)
        )
        return pb.IssueServiceAccountTokenResponse(
            access_token=issued.access_token,
            expires_at=timestamp(issued.expires_at),
            scopes=list(issued.scopes),
        )


# The one auth method callable without an access token (see GrpcService.open_methods).
OPEN_METHODS = ["/confidant.auth.v1.AuthService/IssueServiceAccountToken"]


def with_keys(servicer: KeyRpcs, signing_keys: SigningKeyHandlers, service_accounts: ServiceAccountHandlers):
    """``servicer`` with the signing-key and service-account handlers attached."""
    servicer.use_keys(signing_keys, service_accounts)
    return servicer
