"""flattrfed: Flattr's social micropayments as a federated ActivityPub service."""

__version__ = "0.1.0"
