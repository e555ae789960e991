"""The prospect's dialogue: qualification, the texts and buttons it says, one transaction
per answer."""
