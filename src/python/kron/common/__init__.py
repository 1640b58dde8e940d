"""Cross-cutting helpers every deployable uses: logging, metrics."""
