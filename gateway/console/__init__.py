"""The web console (operators, admin port `/ui/`) and the customer portal (an account's own
people, data plane `portal.path`): one set of server-rendered pages (contract section 10)."""
