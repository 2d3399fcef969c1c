"""`python -m samples.smtp_sink` runs the local SMTP sink."""

from samples.smtp_sink.sink import main

main()
