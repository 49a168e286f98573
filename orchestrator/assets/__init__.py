"""The asset register: every lamp, cabinet, crossing and bollard site of the city."""
