"""Pure indicator and alert logic, and the Faust agents that drive it."""
