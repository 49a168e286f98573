"""Crisis playbooks: named, versioned actions across lamps, crossings and bollards over an
area, started by an admin or the crisis role (optionally confirmed by a second person),
checked before anything is sent, ended with one command. Rules: :mod:`domain.playbooks`."""
