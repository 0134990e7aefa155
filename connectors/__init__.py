"""The plug-in connector kinds (drop folder, HTTP intake, sinks) and the runtime that runs them."""
