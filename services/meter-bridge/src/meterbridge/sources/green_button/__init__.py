"""Green Button (NAESB ESPI): file import and PG&E Share My Data."""
