"""DevConnect's real-time side: Socket.IO chat and presence inside each API instance.

``push`` is what other processes (the consumers) use to reach a user's sockets on
whatever instance they are connected to; ``server`` builds the Socket.IO server the
API mounts; ``handlers`` are its events; ``liveness`` heartbeats the instance's
presence lease and sweeps dead instances.
"""
