"""`python -m samples.telephony` runs the sample telephony provider."""

from samples.telephony.app import main

main()
