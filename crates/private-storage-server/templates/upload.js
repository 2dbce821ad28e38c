// The upload form, enhanced: choose or drop several files; each goes through tus (the vendored
// tus-js-client) with its own progress bar, resumes by itself after a network error or a server
// restart (and after a reload of the page, from the URL kept in localStorage), and shows its
// own message if it is refused. Without JavaScript the form posts one file normally.
const form = document.getElementById('upload-form');
const input = document.getElementById('file');
const list = document.getElementById('uploads');
const drop = document.getElementById('drop');
const summary = document.getElementById('upload-error');
input.multiple = true;

// What the server said, for a person: the body of its answer (a sentence), else the error.
function reason(error) {
  const body = error.originalResponse && error.originalResponse.getBody();
  if (body) {
    try { return JSON.parse(body).error || body; } catch (_) { return body; }
  }
  return 'The upload was interrupted: ' + (error.message || error);
}

function row(file) {
  const item = document.createElement('li');
  item.className = 'upload';
  const name = document.createElement('span');
  name.className = 'upload-name';
  name.textContent = file.name;
  const progress = document.createElement('progress');
  progress.max = 100;
  progress.value = 0;
  const status = document.createElement('span');
  status.className = 'upload-status';
  status.setAttribute('role', 'status');
  item.append(name, progress, status);
  list.append(item);
  list.hidden = false;
  return { item, progress, status };
}

function send(file) {
  const { item, progress, status } = row(file);
  return new Promise((resolve) => {
    const upload = new tus.Upload(file, {
      endpoint: '/api/uploads',
      // Below any cap a proxy in front puts on request bodies (`upload_chunk_size`).
      chunkSize: Number(form.dataset.chunkSize) || 8 * 1024 * 1024,
      retryDelays: [0, 1000, 2000, 4000, 8000, 15000],
      metadata: { filename: file.name, filetype: file.type },
      headers: { 'X-CSRF-Token': form.elements.csrf.value },
      removeFingerprintOnSuccess: true,
      onProgress(sent, total) {
        progress.value = (100 * sent) / total;
      },
      onShouldRetry(error) {
        // Retry what can get better (the network, a restart, a busy server), not a refusal.
        const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
        return status === 0 || status === 409 || status === 423 || status === 429 || status >= 500;
      },
      onSuccess() {
        progress.value = 100;
        item.classList.add('done');
        status.textContent = 'uploaded';
        resolve(null);
      },
      onError(error) {
        item.classList.add('failed');
        progress.hidden = true;
        const message = reason(error);
        status.textContent = message;
        resolve(file.name + ': ' + message);
      },
    });
    upload.findPreviousUploads().then((previous) => {
      if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    });
  });
}

async function sendAll(files) {
  summary.hidden = true;
  const notice = document.getElementById('notice');
  if (notice) notice.hidden = true;
  const failures = (await Promise.all(Array.from(files).map(send))).filter(Boolean);
  if (failures.length === 0) {
    window.location = '/?uploaded=' + encodeURIComponent(files.length === 1 ? files[0].name : files.length + ' files');
    return;
  }
  summary.textContent = failures.join('\n');
  summary.hidden = false;
}

if (window.tus && tus.isSupported) {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (input.files.length) sendAll(input.files);
  });
  drop.hidden = false;
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    if (event.dataTransfer.files.length) sendAll(event.dataTransfer.files);
  });
}
