"""devctl: the DevConnect ops and dev toolkit."""

__version__ = "0.1.0"
