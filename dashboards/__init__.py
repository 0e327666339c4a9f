"""dashboards: Plotly figures and the HTML report of a grid study."""
