"""router: assigns each case a department and a due date, by the city's rules."""
