"""Supervisor's event protocol: the event types and their payloads, the listener protocol spoken
on a listener's stdin/stdout, and the per-pool buffers that feed listeners from the master loop.
Pure: nothing here touches a file descriptor; the programs wing carries out what it decides."""
