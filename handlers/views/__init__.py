"""The views: funnel results rendered as Telegram HTML (and as plain text for the terminal).
The domain hands over data; every value that came from marketers or users is escaped here."""
