"""Tests of tessel.passes."""
