"""The policies tier: the CrossGuard pack on fixtures and on the synthesized stacks."""
