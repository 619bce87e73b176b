"""The inference engines behind one interface (`base.Engine`), and `factory.load_engine` that picks one."""
