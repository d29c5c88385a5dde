"""The lab bench/camera.py serves: nothing but its camera, declared in the lab.toml the bench
writes (spectators on, so that the viewers need no session)."""

from labrt import Lab

lab = Lab()
