"""Challenge plumbing shared by the HTTP service and the Kafka worker: verifying CAPTCHA response tokens."""
