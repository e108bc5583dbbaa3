"""Previews for the people who write messages: `larder render` renders a Braze message locally."""
