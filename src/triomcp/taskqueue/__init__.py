"""taskqueue layer."""
