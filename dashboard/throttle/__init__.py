"""Sign-in throttling: password guesses on /login/ and /admin/login/ (django-axes, configured in
settings; the lockout answer is login.py) and bearer-token guesses (tokens.py), both counted by the
client address of address.py."""
