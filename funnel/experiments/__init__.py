"""A/B tests and holdouts: sticky assignment by hash, exposures recorded with the message that
shows a variant, and the statistics that stay valid when the report is read every day."""
