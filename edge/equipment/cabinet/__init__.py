"""The street cabinet itself: door, mains, temperature and light, watched by the monitor."""
