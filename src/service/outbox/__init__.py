"""The transactional outbox: events that must leave the service, written in the transaction that causes them."""
