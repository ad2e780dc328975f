"""Persistence: the LMDB block store, pins and garbage collection, CAR import/export."""
