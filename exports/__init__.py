"""Exports of gold dataset versions to other training formats (LeRobot today)."""
