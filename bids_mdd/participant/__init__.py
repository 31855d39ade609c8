"""The participant level: preprocessing, then the models, then the report, for many
participants at once."""
