"""forgeway's CrossGuard policy pack: the rules package holds the policies, __main__.py serves them."""
