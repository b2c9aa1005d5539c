"""Is a place inside an alert's area: a point in a polygon (ray casting) or a circle (great-circle distance)."""

from __future__ import annotations

import math

from lifeline.tasks.adapters.alerts import Area

EARTH_RADIUS_KM = 6371.0


def in_polygon(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    latitude, longitude = point
    inside = False
    for (lat1, lon1), (lat2, lon2) in zip(polygon, polygon[1:] + polygon[:1], strict=True):
        if (lat1 > latitude) != (lat2 > latitude):
            crossing = lon1 + (latitude - lat1) * (lon2 - lon1) / (lat2 - lat1)
            if longitude < crossing:
                inside = not inside
    return inside


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def covers(area: Area, *, location: tuple[float, float] | None, geocodes: list[tuple[str, str]]) -> str | None:
    """Why `area` covers a place with this location and these geocodes (None when it does not)."""
    for code in geocodes:
        if code in area.geocodes:
            return f"geocode {code[0]}={code[1]}"
    if location is not None:
        if any(in_polygon(location, polygon) for polygon in area.polygons):
            return "inside a polygon" + (f" of {area.description}" if area.description else "")
        for latitude, longitude, radius in area.circles:
            if distance_km(location, (latitude, longitude)) <= radius:
                return "inside a circle" + (f" of {area.description}" if area.description else "")
    return None
