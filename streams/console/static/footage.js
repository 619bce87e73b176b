// The cameras' own footage: one <video> per camera, each playing its pieces of the clip's window in turn (a
// window crosses upload boundaries), kept in step on one clock; the playhead moves over the events' timeline.
(function () {
  const box = document.getElementById("footage");
  if (!box) return;
  const button = document.getElementById("footage-play"), scrub = document.getElementById("footage-scrub");
  const clock = document.getElementById("footage-clock"), head = document.getElementById("footage-playhead");
  const status = document.getElementById("footage-status");
  const duration = Number(box.dataset.duration) || 1;
  let cams = [], t = 0, playing = false, last = 0;

  function pieceAt(cam, time) {
    return cam.pieces.findIndex(function (p) { return time >= p.at && time < p.at + p.length; });
  }
  function follow(cam, time) {
    const i = pieceAt(cam, time);
    cam.video.classList.toggle("gap", i < 0);  // no upload of this camera covers this moment
    if (i < 0) { cam.video.pause(); return; }
    const piece = cam.pieces[i];
    if (cam.current !== i) { cam.current = i; cam.video.src = piece.url; }
    const want = piece.offset + (time - piece.at);
    if (Math.abs(cam.video.currentTime - want) > 0.3) cam.video.currentTime = want;
    if (playing && cam.video.paused) cam.video.play().catch(function () {});
    if (!playing && !cam.video.paused) cam.video.pause();
  }
  function show() {
    scrub.value = t;
    clock.textContent = t.toFixed(1) + " s";
    const x = 1000 * t / duration;
    head.setAttribute("x1", x); head.setAttribute("x2", x);
    box.dataset.time = t.toFixed(2);
  }
  function seek(time) { t = Math.max(0, Math.min(duration, time)); cams.forEach(function (c) { follow(c, t); }); show(); }
  function stop() { playing = false; button.textContent = "Play"; seek(t); }
  function tick(now) {
    if (!playing) return;
    t += (now - last) / 1000; last = now;
    if (t >= duration) { t = duration; stop(); return; }
    seek(t);
    requestAnimationFrame(tick);
  }
  button.addEventListener("click", function () {
    if (playing) { stop(); return; }
    if (t >= duration) t = 0;
    playing = true; button.textContent = "Pause"; last = performance.now();
    seek(t); requestAnimationFrame(tick);
  });
  scrub.addEventListener("input", function () { playing = false; button.textContent = "Play"; seek(Number(scrub.value)); });

  fetch(box.dataset.plan, { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
    .then(function (plan) {
      ["road", "driver"].forEach(function (name) {
        const video = document.getElementById("footage-" + name);
        const pieces = plan.cameras[name] || [];
        if (!pieces.length) video.closest("figure").classList.add("missing");
        cams.push({ video: video, pieces: pieces, current: -1 });
      });
      if (!cams.some(function (c) { return c.pieces.length; })) {
        status.textContent = "The cameras' uploads of this clip are not stored: only what the model saw is.";
        box.classList.add("empty");
      }
      seek(0);
    })
    .catch(function (e) { status.textContent = "The footage could not be loaded (" + e.message + ")."; });
})();
