"""QObjects with signals over the core: they run blocking core calls on worker threads and report
back on the GUI thread. No widgets here."""
