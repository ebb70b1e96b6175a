"""Schemas every stage agrees on: the RLDS feature spec and the lake's Arrow tables."""
