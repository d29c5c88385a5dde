"""The side-by-side benchmark of labrt against weblablib (``bench/run.py``), in small modules:
``env`` installs what the reference lab needs, ``procs`` starts and measures servers, ``targets``
knows how each stack is started, ``load`` drives them over real sockets, ``metrics`` measures one
thing each, and ``table`` turns repeats into medians, ratios and files."""
