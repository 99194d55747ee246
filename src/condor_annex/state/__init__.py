"""Durable state: the SQLite store (:mod:`.store`), its rows (:mod:`.records`) and the instance
lifecycle state machine (:mod:`.lifecycle`)."""
