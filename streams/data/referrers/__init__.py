"""Matomo's referrer detection lists (CC0), read by `streams.core.traffic`; see README.md here."""
