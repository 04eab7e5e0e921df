"""Test code both tiers share: suites run over several backends, and the helpers they use."""
