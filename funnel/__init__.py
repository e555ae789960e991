"""The domain: pure Python and SQLAlchemy, grouped by capability. Nothing here knows
aiogram, the application (bot/) or the presentation (handlers/)."""
