"""The domain: definitions, instance state, expressions and errors. No IO."""
