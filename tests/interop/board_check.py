"""Browser check of the action board of a running `plantflow demo --serve`:
Chromium (driven by Selenium through Debian's chromedriver) opens the board
with the token in its address, sees one card per injected problem, clicks
"Acknowledge" on the action the simulated crew left open, confirms with a
name and a note, sees the card turn `acknowledged` over the live event
stream, and DuckDB then finds that revision in the lake; then the tag
quality tab lists every tag of the assets table.

usage: board_check.py BOARD_URL LAKE_DIR SCREENSHOT.png
"""
import sys
import tempfile
import time

import duckdb
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

url, lake, shot = sys.argv[1], sys.argv[2], sys.argv[3]
RULES = sorted(["baseload_creep", "chiller_kw_per_ton", "compressor_off_hours", "demand_peak", "idle_load"])
LEFT_OPEN = "baseload_creep"

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1280,1000", f"--user-data-dir={tempfile.mkdtemp()}"]:
    opts.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(driver, 60)
try:
    driver.get(url)
    wait.until(lambda d: "live" == d.find_element(By.ID, "live").text)
    # Every status: one card per injected problem.
    Select(driver.find_element(By.ID, "status")).select_by_value("")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "article.card")) >= 5)
    cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
    rules = sorted(c.find_element(By.TAG_NAME, "strong").text for c in cards)
    print("board cards:", rules)
    assert rules == RULES, rules
    # The open ones (the default view): the crew left one.
    Select(driver.find_element(By.ID, "status")).select_by_value("open,acknowledged")
    card = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "article.card[data-status=open]")))
    action_id = card.get_attribute("data-action-id")
    assert LEFT_OPEN in card.text, card.text
    card.find_element(By.CSS_SELECTOR, "button[data-verb=ack]").click()
    wait.until(ec.visibility_of_element_located((By.ID, "confirm")))
    # The token came with the address; the name is asked once.
    driver.find_element(By.ID, "by").send_keys("ci-browser")
    driver.find_element(By.ID, "note").send_keys("seen on the board")
    driver.find_element(By.ID, "confirm-ok").click()
    sel = f'article.card[data-action-id="{action_id}"][data-status=acknowledged]'
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, sel)))
    print("acknowledged on the board:", action_id)
    driver.save_screenshot(shot)
    print("screenshot:", shot)
    # The tag quality tab: one row per tag of the assets table (and any
    # unknown tag), the status chips adding up to them.
    driver.find_element(By.ID, "tab-tags").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tag-table tbody tr")) > 0)
    rows = driver.find_elements(By.CSS_SELECTOR, "#tag-table tbody tr")
    with open(f"{lake}/../input/assets.csv") as f:
        assets = sum(1 for _ in f) - 1
    chips = {b.get_attribute("data-status"): int(b.text.rsplit(" ", 1)[1])
             for b in driver.find_elements(By.CSS_SELECTOR, "#tag-counts button")}
    print("tag statuses:", chips)
    assert len(rows) >= assets and chips[""] == len(rows), (len(rows), assets, chips)
    assert chips[""] == sum(n for k, n in chips.items() if k), chips
    driver.save_screenshot(shot.replace(".png", "-tags.png"))
finally:
    driver.quit()

# The lake holds the acknowledged revision (its files roll every 2 s).
con = duckdb.connect()
deadline = time.time() + 60
while True:
    row = con.execute(f"""
      SELECT status, status_by, status_note, revision
      FROM read_parquet('{lake}/actions/**/*.parquet', hive_partitioning=true)
      WHERE action_id = ? ORDER BY revision DESC LIMIT 1""", [action_id]).fetchone()
    if row and row[0] == "acknowledged":
        break
    if time.time() > deadline:
        raise SystemExit(f"the lake's latest revision of {action_id} is {row}, not acknowledged")
    time.sleep(0.5)
assert row[1] == "ci-browser" and row[2] == "seen on the board", row
print("lake:", action_id, row)
