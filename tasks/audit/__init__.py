"""Audit of avemo outputs: the record of where one came from, its verification, and their text."""
