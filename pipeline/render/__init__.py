"""Pictures of maps: heat maps and contact sheets (Pillow), and matplotlib figures."""
