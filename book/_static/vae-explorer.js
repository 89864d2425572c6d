/* The latent explorer of chapter 6: move z over the plane of the 2-D VAE, see the decoded digit.
 *
 * The decoder g_theta runs here, in the reader's browser, from the weights that chapter 6 exports
 * with vae_tutorial.explorer.export_decoder into vae-explorer-weights.js (window.VAE_EXPLORER).
 *
 * Why no inference runtime (ONNX Runtime Web, TensorFlow.js): the decoder is two dense layers,
 * 2 -> 400 -> 784, about 315,000 multiply-adds, well under a millisecond in plain JavaScript.
 * A runtime is megabytes of script and WebAssembly that it loads with fetch(), which fails on a
 * page opened from disk (file://); these forty lines of arithmetic need nothing but the page.
 *
 * For tests, window.vaeExplorer.state holds the exact z of the last decoding (z, two numbers)
 * and its unscaled output (output, a Float32Array of the 784 pixel means sigmoid(g_theta(z))).
 */
(function () {
  'use strict';

  const LIMIT = 4; // the plane spans [-LIMIT, LIMIT] prior standard deviations in each axis
  const STEP = 0.1; // one arrow key press, in prior standard deviations (Shift: 5 steps)
  const PLANE = 320; // CSS pixels of the plane's side
  const TAB10 = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
    '#7f7f7f', '#bcbd22', '#17becf']; // matplotlib's tab10: the chapter's scatter colours

  function fail(root, message) {
    console.error(`vae-explorer: ${message}`);
    if (root) {
      root.textContent = `The latent explorer could not start: ${message}`;
    }
  }

  function bytesOf(base64) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  // IEEE 754 half precision (1 sign, 5 exponent, 10 fraction bits) to a JavaScript number.
  function halfToNumber(h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24; // subnormal
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  function halves(base64) {
    const bytes = bytesOf(base64);
    const view = new DataView(bytes.buffer);
    const out = new Float32Array(bytes.length / 2);
    for (let i = 0; i < out.length; i += 1) out[i] = halfToNumber(view.getUint16(2 * i, true));
    return out;
  }

  // The exported object as typed arrays; W1 (H, 2), b1 (H), W2 (784, H), b2 (784), row-major.
  function readModel(data) {
    if (!data || data.format !== 'vae-explorer/1') {
      throw new Error('window.VAE_EXPLORER is missing or not in the format vae-explorer/1');
    }
    const H = data.hidden_dim;
    const P = data.pixels;
    const flat = halves(data.decoder);
    if (data.latent_dim !== 2 || flat.length !== 2 * H + H + P * H + P) {
      throw new Error(`${flat.length} weights for a 2-${H}-${P} decoder`);
    }
    let at = 0;
    const take = (n) => flat.subarray(at, (at += n));
    return {
      H, P,
      W1: take(2 * H), b1: take(H), W2: take(P * H), b2: take(P),
      codes: halves(data.codes), labels: bytesOf(data.labels),
    };
  }

  // The decoder: h = relu(W1 z + b1), logits = W2 h + b2, output = sigmoid(logits).
  function decode(model, z, hidden, output) {
    const { H, P, W1, b1, W2, b2 } = model;
    for (let j = 0; j < H; j += 1) {
      const a = b1[j] + W1[2 * j] * z[0] + W1[2 * j + 1] * z[1];
      hidden[j] = a > 0 ? a : 0;
    }
    for (let i = 0; i < P; i += 1) {
      let logit = b2[i];
      const row = i * H;
      for (let j = 0; j < H; j += 1) logit += W2[row + j] * hidden[j];
      output[i] = 1 / (1 + Math.exp(-logit));
    }
  }

  function element(tag, attributes, parent) {
    const el = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([key, value]) => {
      if (key === 'text') el.textContent = value;
      else el.setAttribute(key, value);
    });
    if (parent) parent.appendChild(el);
    return el;
  }

  const signed = (v) => `${v < 0 ? '\u2212' : '+'}${Math.abs(v).toFixed(2)}`;

  function start(root) {
    if (root.dataset.ready) return;
    const began = performance.now();
    let model;
    try {
      model = readModel(window.VAE_EXPLORER);
    } catch (error) {
      fail(root, error.message);
      return;
    }
    root.dataset.ready = 'true';
    root.textContent = '';

    const left = element('div', { class: 'vae-explorer-left' }, root);
    const plane = element('canvas', {
      id: 'vae-explorer-plane', class: 'vae-explorer-plane', tabindex: '0', role: 'slider',
      'aria-label': 'Latent plane of the 2-D VAE: drag the marker, or move it with the arrow keys',
    }, left);
    const legend = element('div', { class: 'vae-explorer-legend', 'aria-hidden': 'true' }, left);
    TAB10.forEach((colour, label) => {
      element('span', { style: `--swatch: ${colour}`, text: String(label) }, legend);
    });
    element('div', {
      class: 'vae-explorer-axes',
      text: `z\u2081 across, z\u2082 up, each from \u2212${LIMIT} to +${LIMIT} prior standard` +
        ' deviations; dots: codes \u03bc(x) of test digits, coloured by label',
    }, left);
    const right = element('div', { class: 'vae-explorer-right' }, root);
    const digit = element('canvas', {
      id: 'vae-explorer-digit', class: 'vae-explorer-digit', width: '28', height: '28',
      role: 'img', 'aria-label': 'The decoded digit sigmoid(g(z))',
    }, right);
    const controls = element('div', { class: 'vae-explorer-controls' }, right);
    const inputs = ['z\u2081', 'z\u2082'].map((name, k) => {
      const label = element('label', { text: `${name} ` }, controls);
      return element('input', {
        id: `vae-explorer-z${k + 1}`, type: 'number', step: String(STEP), min: String(-LIMIT),
        max: String(LIMIT), value: '0.00', 'aria-label': `${name} in prior standard deviations`,
      }, label);
    });
    const button = element('button', {
      id: 'vae-explorer-sample', type: 'button', text: 'sample z ~ N(0, I)',
    }, controls);
    const readout = element('p', {
      id: 'vae-explorer-readout', class: 'vae-explorer-readout', 'aria-live': 'polite',
    }, right);

    const hidden = new Float32Array(model.H);
    const state = {
      z: [0, 0], output: new Float32Array(model.P), updates: 0, source: 'start',
      limit: LIMIT, codes: model.codes.length / 2, startMs: 0, decodeMs: 0,
    };
    const pixels = digit.getContext('2d').createImageData(28, 28);
    const scatter = document.createElement('canvas');
    let colours = null;

    function themeColours() {
      const style = getComputedStyle(root);
      const pick = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
      return {
        background: pick('--pst-color-background', '#ffffff'),
        text: pick('--pst-color-text-base', '#222222'),
        grid: pick('--pst-color-border', '#cccccc'),
      };
    }

    // The static layer: background, grid, axes and the codes, drawn once per theme and size.
    function drawScatter() {
      const ratio = window.devicePixelRatio || 1;
      const size = Math.round(PLANE * ratio);
      plane.width = plane.height = scatter.width = scatter.height = size;
      colours = themeColours();
      const ctx = scatter.getContext('2d');
      const at = (v) => ((v + LIMIT) / (2 * LIMIT)) * size;
      ctx.fillStyle = colours.background;
      ctx.fillRect(0, 0, size, size);
      ctx.strokeStyle = colours.grid;
      for (let v = -LIMIT + 1; v < LIMIT; v += 1) {
        ctx.lineWidth = (v === 0 ? 1.5 : 0.5) * ratio;
        ctx.beginPath();
        ctx.moveTo(at(v), 0); ctx.lineTo(at(v), size);
        ctx.moveTo(0, size - at(v)); ctx.lineTo(size, size - at(v));
        ctx.stroke();
      }
      ctx.globalAlpha = 0.5;
      const dot = 2 * ratio;
      for (let n = 0; n < state.codes; n += 1) {
        ctx.fillStyle = TAB10[model.labels[n] % 10];
        ctx.fillRect(at(model.codes[2 * n]) - dot / 2, size - at(model.codes[2 * n + 1]) - dot / 2,
          dot, dot);
      }
      ctx.globalAlpha = 1;
      ctx.fillStyle = colours.text;
      ctx.font = `${11 * ratio}px sans-serif`;
      for (let v = -LIMIT + 1; v < LIMIT; v += 1) {
        if (v !== 0) {
          ctx.fillText(String(v), at(v) + 2 * ratio, size - 3 * ratio);
          ctx.fillText(String(v), 3 * ratio, size - at(v) - 2 * ratio);
        }
      }
    }

    function drawPlane() {
      const ctx = plane.getContext('2d');
      const size = plane.width;
      const ratio = size / PLANE;
      ctx.drawImage(scatter, 0, 0);
      const x = ((state.z[0] + LIMIT) / (2 * LIMIT)) * size;
      const y = size - ((state.z[1] + LIMIT) / (2 * LIMIT)) * size;
      for (const [colour, width] of [[colours.background, 5], [colours.text, 2]]) {
        ctx.strokeStyle = colour;
        ctx.lineWidth = width * ratio;
        ctx.beginPath();
        ctx.arc(x, y, 8 * ratio, 0, 2 * Math.PI);
        ctx.moveTo(x - 14 * ratio, y); ctx.lineTo(x - 4 * ratio, y);
        ctx.moveTo(x + 4 * ratio, y); ctx.lineTo(x + 14 * ratio, y);
        ctx.moveTo(x, y - 14 * ratio); ctx.lineTo(x, y - 4 * ratio);
        ctx.moveTo(x, y + 4 * ratio); ctx.lineTo(x, y + 14 * ratio);
        ctx.stroke();
      }
    }

    function setZ(z1, z2, source) {
      if (!Number.isFinite(z1) || !Number.isFinite(z2)) return;
      state.z = [z1, z2];
      state.source = source;
      const t0 = performance.now();
      decode(model, state.z, hidden, state.output);
      state.decodeMs = performance.now() - t0;
      state.updates += 1;
      if (!state.output.every(Number.isFinite)) {
        fail(null, 'the decoder returned values that are not finite: broken weights?');
      }
      for (let i = 0; i < 784; i += 1) {
        const grey = Math.round(255 * state.output[i]); // white ink on black, as in chapter 6
        pixels.data.set([grey, grey, grey, 255], 4 * i);
      }
      digit.getContext('2d').putImageData(pixels, 0, 0);
      inputs.forEach((input, k) => {
        if (document.activeElement !== input || source !== 'input') {
          input.value = state.z[k].toFixed(2);
        }
      });
      readout.textContent = `z\u2081 = ${signed(z1)}, z\u2082 = ${signed(z2)} prior standard ` +
        `deviations; ${Math.hypot(z1, z2).toFixed(2)} from the prior's mean`;
      plane.setAttribute('aria-valuetext', readout.textContent);
      drawPlane();
    }

    // The pointer: press on the plane, or drag the marker across it.
    let dragging = false;
    function fromPointer(event) {
      const box = plane.getBoundingClientRect();
      const u = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
      const v = Math.min(Math.max((event.clientY - box.top) / box.height, 0), 1);
      setZ(-LIMIT + 2 * LIMIT * u, LIMIT - 2 * LIMIT * v, 'pointer');
    }
    plane.addEventListener('pointerdown', (event) => {
      dragging = true;
      plane.focus();
      if (plane.setPointerCapture) plane.setPointerCapture(event.pointerId);
      fromPointer(event);
    });
    plane.addEventListener('pointermove', (event) => { if (dragging) fromPointer(event); });
    const stop = () => { dragging = false; };
    plane.addEventListener('pointerup', stop);
    plane.addEventListener('pointercancel', stop);

    // The keys: arrows move the marker by STEP, with Shift by 5 STEPs, within the plane.
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    plane.addEventListener('keydown', (event) => {
      const move = moves[event.key];
      if (!move) return;
      event.preventDefault();
      const step = event.shiftKey ? 5 * STEP : STEP;
      const next = state.z.map((v, k) => {
        const moved = Math.round((v + move[k] * step) * 100) / 100;
        return Math.min(Math.max(moved, -LIMIT), LIMIT);
      });
      setZ(next[0], next[1], 'keys');
    });

    // The number fields: type a z in prior standard deviations.
    inputs.forEach((input) => {
      const read = () => setZ(parseFloat(inputs[0].value), parseFloat(inputs[1].value), 'input');
      input.addEventListener('input', read);
      input.addEventListener('change', read);
    });

    // The button: z ~ N(0, I) by the Box-Muller transform.
    button.addEventListener('click', () => {
      const u1 = 1 - Math.random();
      const u2 = Math.random();
      const radius = Math.sqrt(-2 * Math.log(u1));
      setZ(radius * Math.cos(2 * Math.PI * u2), radius * Math.sin(2 * Math.PI * u2), 'sample');
    });

    // Light and dark mode: redraw when the theme switches (pydata-sphinx-theme sets data-theme).
    new MutationObserver(() => { drawScatter(); drawPlane(); })
      .observe(document.documentElement, { attributes: true, attributeFilter: ['data-theme'] });

    drawScatter();
    setZ(0, 0, 'start');
    state.startMs = performance.now() - began;
    window.vaeExplorer = { state, setZ, element: root };
  }

  function startAll() {
    document.querySelectorAll('.vae-explorer').forEach(start);
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', startAll);
  } else {
    startAll();
  }
}());
