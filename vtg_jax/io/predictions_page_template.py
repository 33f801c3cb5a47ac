"""The fixed parts of the predictions page (`io.predictions_page`): HTML skeleton, CSS and the sorting script.

`PAGE` is a `str.format` template (literal braces doubled); everything it references is inline, so the
page opens from a file with no network.
"""

# A click on a column header sorts the rows by it ascending, a second click descending. Rows without a
# value (unparsable predictions have no IoU or offsets) always go last; ties keep the evaluation's order.
SORT_SCRIPT = """
(function () {
  var body = document.getElementById('rows');
  var current = {key: 'index', dir: 1};
  function value(row, key) { var v = row.getAttribute('data-' + key); return v === '' ? null : parseFloat(v); }
  function order(row) { return parseInt(row.getAttribute('data-index'), 10); }
  function sortBy(key) {
    var dir = current.key === key ? -current.dir : 1;
    current = {key: key, dir: dir};
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, key), y = value(b, key);
      if (x === null || y === null) { return (x === null) - (y === null) || order(a) - order(b); }
      return (x - y) * dir || order(a) - order(b);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    document.querySelectorAll('button.sort').forEach(function (b) {
      var on = b.getAttribute('data-sort') === key;
      b.parentNode.setAttribute('aria-sort', on ? (dir > 0 ? 'ascending' : 'descending') : 'none');
      b.querySelector('.arrow').textContent = on ? (dir > 0 ? ' \\u25b2' : ' \\u25bc') : '';
    });
    document.getElementById('sort-state').textContent = key + (dir > 0 ? ' ascending' : ' descending');
  }
  document.querySelectorAll('button.sort').forEach(function (b) {
    b.addEventListener('click', function () { sortBy(b.getAttribute('data-sort')); });
  });
})();
"""

STYLE = """
body {{ font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 20px 24px; color: #222; }}
h1 {{ font-size: 20px; margin: 0; }} .subtitle {{ color: #666; margin: 2px 0 14px; }}
.top {{ display: flex; gap: 40px; align-items: flex-start; flex-wrap: wrap; }}
.metrics {{ display: grid; grid-template-columns: repeat(4, 96px); gap: 10px 16px; }}
.metric .value {{ font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }}
.metric .label {{ color: #666; font-size: 12px; }}
.caption {{ font-size: 12px; color: #666; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 6px 20px; margin: 16px 0 4px; font-size: 12px; color: #444; }}
.legend i {{ display: inline-block; width: 22px; height: 10px; border-radius: 2px; margin-right: 5px;
  vertical-align: -1px; }}
.legend i.track {{ background: #c8c8c8; height: 4px; vertical-align: 2px; }}
.notes {{ font-size: 12px; color: #888; margin: 4px 0; }}
table {{ border-collapse: collapse; width: 100%; margin-top: 6px; }}
th {{ position: sticky; top: 0; background: #f4f4f4; text-align: left; font-weight: 600; border-bottom: 2px solid #ccc;
  white-space: nowrap; }}
th, td {{ padding: 6px 8px; vertical-align: top; }} tr.row {{ border-bottom: 1px solid #e4e4e4; }}
button.sort {{ font: inherit; font-weight: 600; border: 1px solid #bbb; border-radius: 4px; background: #fff;
  padding: 1px 7px; cursor: pointer; }} button.sort:hover {{ background: #eef3fb; }}
td.idx {{ color: #999; width: 28px; }} td.text {{ max-width: 360px; }}
.query {{ font-weight: 600; }} .ids {{ color: #888; font-size: 12px; word-break: break-all; }}
pre.answer {{ white-space: pre-wrap; word-break: break-word; background: #f7f7f7; border: 1px solid #e4e4e4;
  border-radius: 3px; padding: 3px 6px; margin: 4px 0 0; font-size: 12px; max-height: 6.5em; overflow: auto; }}
td.vis {{ width: {vis_width}px; }} .spans {{ font-size: 12px; color: #555; }}
.thumbs {{ display: flex; gap: 4px; margin-top: 3px; font-size: 11px; color: #999; }}
.thumbs figure {{ margin: 0; }}
.thumbs img {{ display: block; border-top: 3px solid transparent; border-bottom: 3px solid transparent; }}
.thumbs img.in-gt {{ border-top-color: {gt}; }} .thumbs img.in-pred {{ border-bottom-color: {pred}; }}
.thumbs figcaption {{ font-size: 11px; color: #666; text-align: center; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td.iou {{ font-weight: 600; }} td.iou.hi {{ color: #1a7f37; }} td.iou.mid {{ color: #5a7d1a; }}
td.iou.lo {{ color: #b7791f; }} td.iou.miss {{ color: #777; }}
td.iou.fail, .fail-text {{ color: {fail}; font-weight: 600; }} tr.unparsable {{ background: #fdf1f0; }}
svg text {{ font: 10px system-ui, sans-serif; fill: #555; }} svg text.fail-text {{ fill: {fail}; font-size: 11px; }}
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>""" + STYLE + """</style></head><body>
<h1>{title}</h1><div class="subtitle">{subtitle}</div>
<div class="top">{metrics}<div><div class="caption">IoU of the predictions, one bar per 0.1 (red: unparsable, IoU 0;
dashed: the R@m thresholds)</div>{histogram}</div></div>
{legend}<div class="notes">{notes}</div>
<div class="notes">Click a column header to sort by it; click again to reverse. Sorted by:
<span id="sort-state">index ascending</span></div>
<table id="predictions"><thead><tr>{heads}</tr></thead>
<tbody id="rows">{rows}</tbody></table>
<script>{script}</script>
</body></html>
"""
