"""`processor dlq`: see what is in a dead-letter topic, why, and send fixed records back."""
