// The clip player: shows the stored 2-FPS stacked frames in turn, and moves the playhead over the events' timeline.
(function () {
  const player = document.getElementById("player");
  if (!player) return;
  const count = Number(player.dataset.count), fps = Number(player.dataset.fps) || 2;
  const duration = Number(player.dataset.duration) || count / fps;
  const base = player.dataset.frames;
  const img = document.getElementById("frame"), scrub = document.getElementById("scrub");
  const clock = document.getElementById("clock"), head = document.getElementById("playhead");
  const button = document.getElementById("play");
  const cache = [];
  const query = player.dataset.query || "";
  for (let i = 0; i < count; i++) { const im = new Image(); im.src = base + i + query; cache.push(im); }
  let index = 0, timer = null;
  function show(i) {
    index = (i + count) % count;
    img.src = cache[index].src;
    scrub.value = index;
    const t = Math.min(duration, index / fps);
    clock.textContent = t.toFixed(1) + " s";
    const x = 1000 * t / duration;
    head.setAttribute("x1", x); head.setAttribute("x2", x);
  }
  function stop() { clearInterval(timer); timer = null; button.textContent = "Play"; }
  button.addEventListener("click", function () {
    if (timer) { stop(); return; }
    button.textContent = "Pause";
    timer = setInterval(function () { show(index + 1); }, 1000 / fps);
  });
  scrub.addEventListener("input", function () { stop(); show(Number(scrub.value)); });
  document.querySelectorAll(".strip img").forEach(function (thumb) {
    thumb.addEventListener("click", function () { stop(); show(Number(thumb.dataset.index)); });
  });
})();
