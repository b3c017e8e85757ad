"""The safe loader: what a pickle may name (``policy``), one unpickler that obeys it opcode by
opcode (``unpickler``), a pass that checks a file without running it (``verifier``), and the
net's nested levels read through both (``readers``).

Safety is never decided by a name alone: a pickle calls whatever sits on its stack and builds
into whatever sits below it, so the rules follow every object from where it came.
"""
