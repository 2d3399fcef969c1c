"""A SAMPLE telephony provider, standing in for Twilio (or SignalWire, Telnyx…) in development and tests.

Not part of civicflow and never for production: it exists so `civicflow dev` and the tests can send texts
and place calls without a real account, and so a person can read them. It speaks the subset of Twilio's
REST API that civicflow uses, with HTTP Basic auth (account SID and auth token):

- ``POST /2010-04-01/Accounts/{sid}/Messages.json`` takes a text (201, Twilio's JSON), then sends signed
  status callbacks queued -> sent -> delivered (or failed/undelivered for the test numbers below);
- ``GET  /2010-04-01/Accounts/{sid}/Messages.json?To=…&From=…&DateSent>=…`` lists texts, newest first;
- ``GET  /2010-04-01/Accounts/{sid}/Messages/{MessageSid}.json`` one text as it stands (404, 20404, for a
  sid it does not hold);
- ``POST /2010-04-01/Accounts/{sid}/Calls.json`` places a call and plays its TwiML (``Twiml`` or ``Url``):
  Say, Pause, Gather (digits from the per-number script set with ``POST /sample/press``), Redirect,
  Hangup; with signed status callbacks ringing -> in-progress -> completed, or busy/no-answer/failed;
- ``GET  /2010-04-01/Accounts/{sid}/Calls.json?To=…&From=…&Status=…&StartTime>=…`` lists calls, newest first
  (a sample call starts when it is placed);
- ``POST /sample/inbound`` (From, Body) is a resident texting the city's number: it is posted, signed, to
  the inbound webhook as Twilio does, and the TwiML ``<Message>`` reply is texted back.

Every text and call is a readable file under ``<state>/phone/<resident's number>/``; a call's file holds
what was said and what was pressed (and a WAV of the speech where ``espeak-ng`` is installed).

Test numbers (as Twilio's magic numbers, by the last four digits of the number texted or called):

==========  ==============================================================
``…0001``   text: accepted, then ``undelivered`` with 30003 (unreachable)
``…0002``   text: refused at once, 21610 (the resident replied STOP)
``…0003``   call: ``busy``
``…0004``   call: ``no-answer``
``…0005``   call: ``failed``
``…0006``   text: ``delivered``, but no status callback is ever posted (lost on the way; ask for it)
not E.164   text or call: refused at once, 21211 (not a valid number)
other From  text or call from a number that is not the city's: refused, 21606
==========  ==============================================================

Run it with ``python -m samples.telephony`` (``civicflow dev`` does); talk to it as a resident with
``civicflow phone reply NUMBER "TEXT"``, ``civicflow phone press NUMBER DIGITS`` and ``civicflow phone list``.
"""
