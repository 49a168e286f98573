"""Who may call, and how much: peers from certificates, roles and scope, admission, limits."""
