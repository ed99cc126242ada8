"""The desktop app (PySide6). It drives the same Pipeline as the headless mode and holds no
pipeline logic: panels set the filter's LiveSettings and show what it produced."""
