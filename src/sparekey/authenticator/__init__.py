"""The desktop authenticator: codes on this computer when the phone is missing.

A vault file (:mod:`.vault`, :mod:`.store`), what the edges do with it (:mod:`.core`), imports of
other apps' exports (:mod:`.imports`), and the two edges: the command line (:mod:`.cli`) and the
terminal UI (:mod:`.tui`). It uses Sparekey's protocol code, never the server's services.
"""
