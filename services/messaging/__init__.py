"""The messaging service: secure-messaging enablement, conversations, encrypted
messages, read state, live events and the outbox relayed to notify."""
